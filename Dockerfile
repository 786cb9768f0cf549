# The clusterlab image, built from source inside Docker: for a laptop that has
# Docker and nothing else. (A machine that cannot pull the Rust image builds
# the same image from host binaries instead: scripts/docker-build.)
#
#   docker build -t clusterlab:latest .
#
# Stage 1 compiles statically linked binaries; stage 2 is an empty image that
# holds them and nothing else: no shell, no libc, no package manager.
# A machine that cannot pull rust:1-bookworm can make a stand-in with
# scripts/rust-image and pass --build-arg RUST_IMAGE=clusterlab-rust:bookworm.
ARG RUST_IMAGE=rust:1-bookworm
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN triple="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
        --target "$triple" -p node -p balancer -p client -p certs \
 && mkdir /out \
 && cp target/"$triple"/release/clusterlab target/"$triple"/release/clusterlab-node \
       target/"$triple"/release/clusterlab-balancer target/"$triple"/release/clusterlab-certs /out/

FROM scratch
COPY --from=build /out/ /
ENTRYPOINT ["/clusterlab"]
