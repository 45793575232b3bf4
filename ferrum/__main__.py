from ferrum.commands import main

main()
