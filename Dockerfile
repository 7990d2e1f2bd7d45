# IACE container image: one `iace` binary plus its config/ folder.
#   docker build $(scripts/base-digests) -t iace .
#   docker run --rm -p 8080:8080 -e IACE__DATABASE__URL=... -e IACE__REDIS__URL=... iace
# The image runs `iace serve`; `docker run ... iace migrate` applies the migrations (Fly runs
# that as its release command, see fly.toml).

# Base images: the tag says which release, the digest which exact image (a tag can be moved to
# other content; a digest cannot). The digests have no default: `scripts/base-digests` resolves
# them in the registry and the deploy and CI workflows pass them as build arguments (README
# "Deploy"). Without them the build fails ("invalid reference format") rather than run on an
# unpinned tag.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUST_DIGEST
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG RUNTIME_DIGEST

# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------
FROM ${RUST_IMAGE}@${RUST_DIGEST} AS builder

# diesel_migrations pulls in diesel's postgres backend, which links libpq (pq-sys finds it
# through pkg-config).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, against stub sources, so this layer is reused until Cargo.toml or
# Cargo.lock change. (The [[test]] target in Cargo.toml is not built here, so tests/ is not
# needed.)
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The real sources. The migrations are embedded in the binary at compile time
# (embed_migrations!("migrations")), so they must be here before the build.
COPY src ./src
COPY migrations ./migrations
# COPY keeps the files' original modification times, which can be older than the stub build
# above; touch them so cargo rebuilds the iace crate instead of reusing the stub.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin iace

# ---------------------------------------------------------------------------
# Runtime
# ---------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}@${RUNTIME_DIGEST} AS runtime

# libpq5: the binary links libpq (used by `iace migrate`). ca-certificates: TLS to Postgres
# through libpq.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq5 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 iace \
    && useradd --system --uid 10001 --gid iace --no-create-home --home-dir /app \
        --shell /usr/sbin/nologin iace

WORKDIR /app
COPY --from=builder /app/target/release/iace /usr/local/bin/iace
# Only what production reads: config/test.toml holds the tests' signing key, which must never
# reach an image (development.toml is for local runs).
COPY config/default.toml config/production.toml /app/config/

ENV APP_ENV=production
# Found from any working directory (for example `fly ssh console -C "iace migrate"`).
ENV IACE_CONFIG_DIR=/app/config

EXPOSE 8080
USER iace
ENTRYPOINT ["iace"]
CMD ["serve"]
