// virtio layer.
