# ZeRO-2 with bf16 (see zero1_bf16.py). Usage: see zero1.py.
_base_ = ['./zero2.py']
strategy = dict(bf16=dict(enabled=True), inputs_to_half=['inputs'], config=dict(data_types=dict(buffer_dtype='bf16')))
