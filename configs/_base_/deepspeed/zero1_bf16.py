# ZeRO-1 with bf16 weights and activations (fp32 master weights in the optimizer): the InternVL
# recipe for fine-tuning InternViT-6B. Usage: see zero1.py.
_base_ = ['./zero1.py']
strategy = dict(
    bf16=dict(enabled=True),
    # the model runs in bf16, so the images from the data preprocessor are cast to bf16 too
    inputs_to_half=['inputs'],
    # DeepSpeed >= 0.17 keeps buffers in fp32, and BatchNorm refuses bf16 weights with fp32 running
    # statistics: buffers follow the weights, as they did in the DeepSpeed InternVL used
    config=dict(data_types=dict(buffer_dtype='bf16')))
