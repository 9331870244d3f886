benchstat media-small.txt
