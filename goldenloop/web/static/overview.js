// Overview charts: reads the chart specs embedded by the page and draws them with uPlot.
// window.goldenloopCharts lists every chart drawn with its number of data points.
(function () {
  "use strict";
  var COLORS = ["#b7791f", "#2563eb", "#16a34a", "#9333ea", "#dc2626", "#0891b2"];
  var source = document.getElementById("overview-data");
  if (!source || typeof uPlot === "undefined") { return; }
  var charts = JSON.parse(source.textContent);

  function formatter(unit) {
    if (unit === "ratio") { return function (v) { return v == null ? "–" : (v * 100).toFixed(1) + "%"; }; }
    if (unit === "ms") { return function (v) { return v == null ? "–" : Math.round(v).toLocaleString() + " ms"; }; }
    if (unit === "usd") { return function (v) { return v == null ? "–" : "$" + v.toFixed(v >= 100 ? 0 : 4); }; }
    return function (v) { return v == null ? "–" : v.toLocaleString(); };
  }

  window.goldenloopCharts = [];
  charts.forEach(function (chart) {
    var target = document.getElementById("chart-" + chart.id);
    if (!target) { return; }
    var fmt = formatter(chart.unit);
    var data = [chart.times];
    var series = [{}];
    var points = 0;
    chart.series.forEach(function (s, i) {
      data.push(s.values);
      s.values.forEach(function (v) { if (v !== null) { points += 1; } });
      series.push({ label: s.label, stroke: COLORS[i % COLORS.length], width: 1.5,
                    spanGaps: true, value: function (u, v) { return fmt(v); } });
    });
    var width = Math.max(Math.min(target.clientWidth - 16, 900), 320);
    var plot = new uPlot({
      width: width, height: 220, series: series,
      axes: [{}, { size: 86, values: function (u, vals) { return vals.map(fmt); } }],
      scales: { x: { time: true } },
    }, data, target);
    target.dataset.points = String(points);
    window.goldenloopCharts.push({ id: chart.id, points: points, plot: plot });
  });
})();
