"""Ramdisks: the newc cpio writer and reader and the two Nitro layouts."""
