from tippingpoint.cli import main

main()
