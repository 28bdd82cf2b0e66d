from goldenloop.cli import main

main()
