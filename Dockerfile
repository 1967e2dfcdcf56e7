# svc-overlay as a static binary on an empty image, run as a non-root user.
#   docker build -t svc-overlay:0.1.0 .
# deploy/kubernetes/statefulset.yaml runs it.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
RUN rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# Static (musl): no libc in the image; musl's resolver reads the pod's
# /etc/resolv.conf search domains, so short seed names resolve.
RUN cargo build --release --locked --target x86_64-unknown-linux-musl -p svc-overlay \
    && cp target/x86_64-unknown-linux-musl/release/svc-overlay /svc-overlay

FROM scratch
COPY --from=build /svc-overlay /svc-overlay
USER 65532:65532
EXPOSE 9500 9600
ENTRYPOINT ["/svc-overlay"]
