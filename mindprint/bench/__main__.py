from mindprint.bench.cli import main

main()
