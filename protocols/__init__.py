"""Sans-I/O codecs of the smiley terminal protocol: bytes in, typed frames out."""
