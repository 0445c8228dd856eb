"""Writes the seed corpus of each fuzz target (fuzz/seeds/TARGET/*).

The tokens and the client assertion are signed with the fixed keys of
fuzz/src/lib.rs, so they verify: the fuzzer starts from inputs that reach
the end of the verifiers, not only their first refusal. Needs the
`cryptography` package: python3 fuzz/seeds/make.py
"""
import base64, hashlib, hmac, json, os
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

def b64u(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
seed = bytes(range(1, 33))
key = Ed25519PrivateKey.from_private_bytes(seed)
secret = b"swarmgate-fuzz-hs256-secret-32-bytes-long"
kid = "hs256-" + hashlib.sha256(secret).hexdigest()[:12]
claims = {"iss":"https://fuzz.swarmgate.test","aud":"swarmgate","sub":"00000000-0000-4000-8000-000000000001","exp":4102444800,"iat":1700000000,"nbf":1700000000,"jti":"fuzz-jti","sid":"fuzz-session","role":"admin","username":"fuzz"}
def jwt(header, claims, sign):
    si = b64u(json.dumps(header,separators=(",",":")).encode()) + "." + b64u(json.dumps(claims,separators=(",",":")).encode())
    return si + "." + b64u(sign(si.encode()))
hs = jwt({"typ":"at+jwt","alg":"HS256","kid":kid}, claims, lambda m: hmac.new(secret, m, hashlib.sha256).digest())
ed = jwt({"typ":"at+jwt","alg":"EdDSA","kid":"fuzz-ed25519"}, claims, key.sign)
ac = {"iss":"fuzz-client","sub":"fuzz-client","aud":"https://fuzz.swarmgate.test/auth/token","exp":4102444800,"jti":"fuzz-assertion-1"}
asr = jwt({"alg":"EdDSA","kid":"fuzz-client-key","typ":"JWT"}, ac, key.sign)

d = os.path.dirname(os.path.abspath(__file__)); os.makedirs(d, exist_ok=True)
def w(target, name, data):
    os.makedirs(f"{d}/{target}", exist_ok=True)
    open(f"{d}/{target}/{name}", "wb").write(data if isinstance(data, bytes) else data.encode())
w("credential", "bearer-hs256", b"\x00Bearer " + hs.encode())
w("credential", "bearer-eddsa", b"\x00bearer " + ed.encode())
w("credential", "api-key-header", b"\x01  sg_abcdefghijklmnop  ")
w("credential", "both-headers", b"\x03Bearer " + ed.encode())
w("credential", "basic-scheme", b"\x00Basic dXNlcjpwYXNz")

# permission: first line a permission, the rest grants
w("permission", "wildcards", "models.load\nmodels.*\ntasks.read\n*:own\nmemory.read:own\nmemory:u1/notes")
w("permission", "deep", "a.b.c.d\na.b.*\na.*:own\nx\n*")
w("permission", "invalid", "Tasks..read\ntasks.*.read\n:own\nmodels.**")
# routes: prefixes, a blank line, paths
w("routes", "table", "/tasks\n-/tasks/admin\n/memory/{owner}\n/memory/shared\n-/svc/{owner}/x\n\n/tasks/7\n/tasks/admin/reset/\n/memory/u1/notes\n/memory/shared/x\n/svc/me/x//a/b/\n/a/%2e%2E/b\n/a/.%2e\n/a\\b\n/a/%2F\n/auth/x")
w("routes", "bad", "tasks\n/auth/x\n/\n/{owner}/{owner}\n\n/")
# usage: flags, chunk size, body
openai_sse = ('data: {"choices":[{"delta":{"content":"Hi there"}}]}\n\n'
  'data: {"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":2,"total_tokens":4}}\n\n'
  'data: [DONE]\n\n')
w("usage", "openai-sse-strip", bytes([0b111, 7]) + openai_sse.encode())
anth = ('event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":5,"cache_read_input_tokens":2,"output_tokens":1}}}\n\n'
  'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"one two three"}}\n\n'
  'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":9}}\r\n\r\n')
w("usage", "anthropic-sse", bytes([0b1001, 13]) + anth.encode())
w("usage", "anthropic-cut", bytes([0b1001, 255]) + anth.encode()[:250])
w("usage", "json", bytes([0, 20]) + b'{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}')
w("usage", "json-anthropic", bytes([4, 3]) + b'{"type":"message","usage":{"input_tokens":4,"output_tokens":6}}')
# Counts at the edge of u64: their sums once overflowed.
w("usage", "json-huge", bytes([0, 64]) + b'{"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":1}}')
w("usage", "anthropic-huge", bytes([1, 64]) + b'data: {"type":"message_start","message":{"usage":{"input_tokens":18446744073709551615,"cache_read_input_tokens":2}}}\n\n')
w("usage", "request", bytes([0, 0]) + b'{"model":"m","messages":[{"role":"user","content":"hello there"}],"prompt":[[1,2],[3]]}')
# config
w("config", "example", open(os.path.join(d, "..", "..", "swarmgate.example.toml")).read())
w("config", "routes", '''[server]
listen = "127.0.0.1:8005"
public_url = "https://gw.example/"
[database]
url = "sqlite://x.db"
[tokens]
algorithm = "HS256"
secret_key = "0123456789abcdef0123456789abcdef"
[roles.worker]
permissions = ["tasks.*", "memory.read:own"]
[[routes]]
name = "tasks"
path_prefix = "/tasks/{owner}"
upstreams = ["http://127.0.0.1:9000"]
permissions = { GET = "tasks.read" }
strip_prefix = true
[limits.roles.worker]
tokens_per_minute = 100
''')
# oauth_form: Authorization header, newline, form body
w("oauth_form", "assertion", "\ngrant_type=client_credentials&client_id=fuzz-client&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=" + asr)
w("oauth_form", "raw-assertion", "\n" + asr)
w("oauth_form", "basic", "Basic " + base64.b64encode(b"my%20client:s%3Ac+r").decode() + "\ngrant_type=client_credentials&scope=a.b+c&client_id=my+client")
w("oauth_form", "post", "\ngrant_type=password&username=u&password=p&client_id=c&client_secret=s")
w("oauth_form", "two-methods", "basic Zm9vOmJhcg==\ngrant_type=refresh_token&refresh_token=sgr_x&client_secret=s&client_id=foo")
