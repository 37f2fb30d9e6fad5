from yunnao.cli import main

main()
