from medunlearn.cli.main import main

main()
