"""Members on other machines, through llama.cpp's own RPC backend (ggml-rpc), never a protocol of ours.

endpoint.py parses "host:port" and probes a server before llama.cpp sees it; backend.py reaches
ggml-rpc through ctypes; member.py is the remote member (a helper process per member, helper.py,
so that llama.cpp's abort on a lost server cannot take the caller down); server.py is
`edge-specens rpc-server`. docs/design.md §11 has the whole picture.
"""
