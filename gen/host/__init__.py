"""Host side of the accelerator: data layout, protocol driver and transports."""
