//! The command line: every subcommand and its flags.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "swarmgate",
    version,
    about = "The zero-trust front door of an AI agent swarm"
)]
pub(crate) struct Cli {
    /// TOML configuration file; environment variables override it.
    #[arg(long, global = true, env = "SWARMGATE_CONFIG", value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the HTTP server.
    Serve,
    /// Run the server with a mock LLM upstream started in the same process,
    /// the model `demo-model` (which role `user` may call) and the route
    /// `/demo` (echo) configured: the README's quick start.
    Demo,
    /// Validate the configuration and exit.
    CheckConfig,
    /// Administrative tasks against the configured database.
    Admin {
        /// Print JSON instead of a readable table or sentence.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// An OpenAI-compatible test server (models, chat and text completions
    /// with SSE streaming, embeddings; any other path echoes the request).
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: std::net::SocketAddr,
        /// Delay every response by this much.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Fraction (0 to 1) of requests answered with a 500.
        #[arg(long, default_value_t = 0.0)]
        fail_rate: f64,
        /// Models served, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "mock-model")]
        models: Vec<String>,
        /// The `x-api-key` Anthropic's `/v1/messages` requires (default:
        /// any, but one must be sent).
        #[arg(long)]
        anthropic_key: Option<String>,
        /// The pause before each word of a streamed reply (0: none, for
        /// measuring the gateway's cost per stream rather than its pace).
        #[arg(long, default_value_t = 20)]
        chunk_interval_ms: u64,
    },
    /// Limits and agent sessions: status, one caller's standing, cleanup
    /// (against the configured database and Redis).
    Quota {
        /// Print JSON instead of readable lines.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: QuotaCommand,
    },
    /// Credentials against a running gateway.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// Signing-key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum QuotaCommand {
    /// Health of the quota state, live agent sessions, role limits.
    Status,
    /// The limit sets of one user, key or agent session and what each has
    /// used and has left.
    Info {
        /// A user by name, email or id.
        #[arg(long, group = "subject")]
        user: Option<String>,
        /// An API key by id.
        #[arg(long, group = "subject")]
        key: Option<String>,
        /// An agent session by id.
        #[arg(long, group = "subject")]
        agent: Option<String>,
    },
    /// Release idle and expired agent sessions now.
    Cleanup,
}

#[derive(Subcommand)]
pub(crate) enum AuthCommand {
    /// Check a credential (JWT, API key or agent token) against a running
    /// gateway: who it is, what it may do, which limits apply.
    Test {
        /// The gateway's base URL (default: the configured public URL).
        #[arg(long, env = "SWARMGATE_URL")]
        url: Option<String>,
        /// The credential; read from SWARMGATE_TOKEN so it stays out of
        /// the process list.
        #[arg(long, env = "SWARMGATE_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum AdminCommand {
    /// Users: list, change role, disable, enable, unlock, delete.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// API keys of a named user: create, list, revoke.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// OAuth2 clients: create, list, delete.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Create a user with any role (password from a prompt or stdin).
    CreateUser {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "user")]
        role: String,
        #[arg(long)]
        full_name: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum UserCommand {
    /// List users (optionally matching part of a username or email).
    List {
        #[arg(long)]
        q: Option<String>,
        /// Users per page (at most 200).
        #[arg(long, default_value_t = 200)]
        limit: i64,
        /// Continue after the page that printed this cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Give a user another role.
    SetRole { user: String, role: String },
    /// Disable a user: every session and key of theirs stops working now.
    Disable { user: String },
    /// Enable a user again (revoked sessions and keys stay revoked).
    Enable { user: String },
    /// Clear a login lockout.
    Unlock { user: String },
    /// Delete a user and everything of theirs.
    Delete { user: String },
}

#[derive(Subcommand)]
pub(crate) enum KeyCommand {
    /// Create a key for a user; the key is printed once.
    Create {
        #[arg(long)]
        user: String,
        #[arg(long)]
        name: String,
        /// A grant; repeat for several.
        #[arg(long = "permission", required = true)]
        permissions: Vec<String>,
        /// A model the key may call; repeat for several.
        #[arg(long = "model")]
        models: Vec<String>,
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List a user's keys (never the secrets).
    List {
        #[arg(long)]
        user: String,
    },
    /// Revoke a key by id.
    Revoke { id: String },
}

#[derive(Subcommand)]
pub(crate) enum ClientCommand {
    /// Register an OAuth2 client; a client secret is printed once.
    Create {
        #[arg(long)]
        name: String,
        /// A permission the client's tokens may carry; repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// An allowed grant type; repeat for several.
        #[arg(long = "grant-type", default_value = "client_credentials")]
        grant_types: Vec<String>,
        /// client_secret_basic, client_secret_post or private_key_jwt.
        #[arg(long, default_value = "client_secret_basic")]
        auth_method: String,
        /// private_key_jwt: a file holding the client's public JWK Set.
        #[arg(long)]
        jwks_file: Option<std::path::PathBuf>,
        /// private_key_jwt: where the client publishes its JWK Set.
        #[arg(long)]
        jwks_uri: Option<String>,
    },
    /// List the clients (never their secrets).
    List,
    /// Delete a client by id; its tokens stop working at once.
    Delete { id: String },
}

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Add a new Ed25519 signing key; the old public key stays in the JWKS
    /// until the tokens it signed have expired.
    Rotate,
}
