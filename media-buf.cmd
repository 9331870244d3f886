benchstat -filter '.name:RelayBufferSize' -col /impl media-buf.txt
benchstat -filter '-.name:RelayBufferSize' media-buf.txt
