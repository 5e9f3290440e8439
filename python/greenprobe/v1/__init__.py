"""Generated gRPC stubs of proto/greenprobe/v1/probe.proto (bash scripts/gen-proto.sh; do not edit)."""
