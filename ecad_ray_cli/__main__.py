from ecad_ray_cli.main import main

main()
