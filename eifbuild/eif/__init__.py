"""The EIF format: reader, writer, checker, metadata, PCRs and signing."""
