from tippingpoint.main import main

main()
