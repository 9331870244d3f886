benchstat password.txt
