"""State-space models: Mamba's selective scan (reference, chunked torch, native CPU kernel, fused CUDA) and Mamba blocks."""
from speechssl.nn.ssm.scan import fused_available, selective_scan
from speechssl.nn.ssm.scan_chunked import auto_chunk_size, selective_scan_chunked
from speechssl.nn.ssm.scan_native import native_available, selective_scan_native
from speechssl.nn.ssm.scan_ref import selective_scan_ref

__all__ = ["selective_scan", "selective_scan_ref", "selective_scan_chunked", "selective_scan_native",
           "fused_available", "native_available", "auto_chunk_size"]
