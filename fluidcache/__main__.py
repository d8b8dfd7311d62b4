from fluidcache.cli import main

main()
