"""OCI images as the app: references, transports, blob import, layers to rootfs."""
