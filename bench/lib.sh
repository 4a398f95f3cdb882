# Shared by the scripts of bench/: the trivial upstream (+ nginx proxy_pass) and the gateway
# with the realistic benchmark action. Source it; the functions write into "$WORK".

# The start of every nginx.conf of bench/ ($1 worker processes), up to inside `http {`.
bench_nginx_head() {
  mkdir -p "$WORK/logs"
  cat > "$WORK/nginx.conf" <<NGINX
worker_processes $1;
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
NGINX
}

# nginx: the trivial upstream on $1 and proxy_pass to it on $2 (both loopback).
bench_nginx_conf() {
  local up_port=$1 ngx_port=$2
  bench_nginx_head auto
  cat >> "$WORK/nginx.conf" <<NGINX
  upstream trivial { server 127.0.0.1:$up_port; keepalive 64; }
  server {
    listen 127.0.0.1:$up_port reuseport;
    location / {
      default_type application/json;
      return 200 '{"id":"u-1","name":"Ada Lovelace","email":"ada@example.com","state":"active","version":3}';
    }
  }
  server {
    listen 127.0.0.1:$ngx_port reuseport;
    location / {
      proxy_pass http://trivial;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
}

# nginx as a trivial event target on $1 (loopback): one worker answering 200 to every request,
# so that the target takes a bounded share of the cores.
bench_nginx_receiver() {
  local port=$1
  bench_nginx_head 1
  cat >> "$WORK/nginx.conf" <<NGINX
  client_body_buffer_size 64k;
  server {
    listen 127.0.0.1:$port;
    location / { return 200; }
  }
}
NGINX
}

# The gateway listening on $1 with the benchmark action calling the upstream on $2: Basic
# inbound auth, a path param, an upstream with an API key, input schema, 3-field output mapping
# and output schema; metrics, audit, retries and the breaker as shipped.
bench_gateway_toml() {
  local gw_port=$1 up_port=$2
  cat > "$WORK/gateway.toml" <<TOML
[server]
listen = "127.0.0.1:$gw_port"
io_threads = ${GW_IO_THREADS:-0}
[store]
url = "sqlite://data/gateway.db"
[genesys]
simulate = true
[upstreams.trivial]
base_url = "http://127.0.0.1:$up_port"
timeout_ms = 2000
auth = { type = "api_key", header = "X-Api-Key", key = "bench-upstream-key" }
[data_actions]
auth = { type = "basic", username = "genesys", password = "bench-password" }
[[actions]]
name = "benchUser"
upstream = "trivial"
method = "GET"
path = "/users/{userId}"
timeout_ms = 5000
input_schema = { type = "object", required = ["userId"], properties = { userId = { type = "string", minLength = 1 } } }
output_schema = { type = "object", required = ["id", "name"], properties = { id = { type = "string" }, name = { type = "string" }, email = { type = "string" } } }
[actions.params]
userId = "/userId"
[actions.output]
"/id" = "/id"
"/name" = "/name"
"/email" = "/email"
TOML
}

BENCH_AUTH="Basic $(printf 'genesys:bench-password' | base64)"
BENCH_BODY='{"userId":"u-1"}'   # 16 bytes

# Waits (bounded) until the gateway on port $1 answers /healthz.
bench_wait_healthy() {
  for _ in $(seq 300); do curl -fs "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "the gateway on port $1 did not become healthy" >&2
  return 1
}

# The ingest benchmarks' gateway configuration on stdout: listening on $1, delivering every event
# to one local target on $2, store URL $3, $4 delivery workers (default 8); the legacy issuer
# with the repository's sandbox key (ES256), so that `genesys-gateway token` mints for it.
bench_ingest_toml() {
  cat <<TOML
[server]
listen = "127.0.0.1:$1"
max_body_bytes = 4194304
[telemetry]
log_format = "json"
[store]
url = "$3"
[genesys]
simulate = true
[[jwt_issuers]]
name = "legacy"
issuer = "legacy-ordering"
audiences = ["genesys-gateway"]
algorithms = ["ES256"]
key_file = "$PWD/config/keys/legacy.pub.pem"
private_key_file = "$PWD/config/keys/legacy.key.pem"
max_token_lifetime_s = 3600
[ingest]
auth = { type = "jwt", issuers = ["legacy"] }
max_batch = 500
max_queue_depth = 10000000
[delivery]
workers = ${4:-8}
allow_cidrs = ["127.0.0.0/8"]
[[targets]]
name = "bench-receiver"
endpoint_url = "http://127.0.0.1:$2/events"
auth = { type = "NONE" }
event_types = ["custom.legacy.orders.*"]
secret = "whsec_UBaVFOnYgW8ew5k9ywpCE/a+7VRWKymegwmSkvzy2fs="
TOML
}

# The EXIT trap of scripts that run one gateway (pid in GW_PID, may be empty) and an nginx of
# their own in WORK: `GW_PID=""; trap bench_cleanup EXIT`.
bench_cleanup() {
  [ -n "${GW_PID:-}" ] && kill "$GW_PID" 2>/dev/null || true
  nginx -p "$WORK" -c nginx.conf -s stop 2>/dev/null || true
  rm -rf "$WORK"
}
