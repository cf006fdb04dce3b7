"""The training engine: DeepSpeed config from the spec (`config`), process-group setup
(`dist`), the one loop every launcher calls (`loop.train`), atomic checkpoints (`checkpoint`),
throughput/MFU meters (`meters`) and the hooks tracking plugs into (`hooks`).

Import from the submodules: this package stays import-light so the CLI starts fast.
"""
