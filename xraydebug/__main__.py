from xraydebug.cli import main

main()
