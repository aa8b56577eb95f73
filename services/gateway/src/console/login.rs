//! `GET/POST /console/login`, `POST /console/logout`: an API token
//! exchanged for a session cookie ([`super::session`]).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::Console;
use super::filter::Fields;
use super::html::{self, Result, esc};
use super::session::{self, Operator, Session};

fn login_page(error: Option<&str>) -> axum::response::Html<String> {
    let error =
        error.map(|e| format!(r#"<p class="error" data-testid="login-error">{}</p>"#, esc(e))).unwrap_or_default();
    let body = format!(
        r#"<h1>Sign in</h1>{error}
<form method="post" action="/console/login" data-testid="login-form">
<label for="token">API token (a bearer token of the API, with tenants:read at least)</label>
<textarea id="token" name="token" rows="4" cols="80" data-testid="login-token" autocomplete="off" required></textarea>
<p><button type="submit" data-testid="login-submit">Sign in</button></p>
</form>"#
    );
    html::page("login", "Sign in", None, None, &body)
}

/// `GET /console/login`; with OIDC configured, also "Sign in with
/// <issuer>" ([`super::oidc`]).
pub async fn form(State(console): State<Console>) -> Response {
    let mut page = login_page(None);
    if let Some(oidc) = &console.oidc {
        page.0 = page.0.replacen("</main>", &format!("{}</main>", super::oidc::sign_in_link(oidc)), 1);
    }
    page.into_response()
}

/// `POST /console/login` `token=…`: the token is checked exactly as the
/// API checks a bearer token; a session needs `tenants:read`.
pub async fn sign_in(State(console): State<Console>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = Fields::parse(&body);
    let token = fields.get("token").map(str::trim).unwrap_or_default();
    if token.is_empty() {
        return (StatusCode::UNAUTHORIZED, login_page(Some("paste an API token"))).into_response();
    }
    let claims = match console.app.verifier.verify(token).await {
        Ok(claims) => claims,
        Err(problem) => {
            let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::UNAUTHORIZED);
            return (status, login_page(Some(&problem.detail))).into_response();
        }
    };
    match session_for(&claims) {
        Ok(session) => signed_in(&console, &headers, &session),
        Err(detail) => (StatusCode::FORBIDDEN, login_page(Some(&detail))).into_response(),
    }
}

/// The session for a token's claims, checked by the API's verifier: it
/// needs `tenants:read`; a tenant claim makes a tenant-scoped session,
/// which sees that tenant only (issue 29). `Err`: why it is refused.
pub fn session_for(claims: &crate::auth::Claims) -> std::result::Result<Session, String> {
    let scopes: Vec<String> = claims.scope.split_whitespace().map(str::to_owned).collect();
    if !scopes.iter().any(|s| s == crate::auth::READ) {
        return Err(format!("the console needs the scope tenants:read; the token grants {:?}", claims.scope));
    }
    Ok(Session::new(&claims.sub, scopes, claims.tenant.clone(), claims.exp))
}

/// The answer that starts `session`: its cookie, and a redirect to the
/// tenant list (a tenant-scoped session's list holds its tenant only).
pub fn signed_in(console: &Console, headers: &HeaderMap, session: &Session) -> Response {
    let secure = console.settings.public_https || session::over_https(headers);
    let cookie = session::set_cookie(&console.keys.seal(session), session.exp, secure);
    tracing::info!(subject = %session.sub, tenant = ?session.tenant, "console sign-in");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/console")).into_response()
}

/// `POST /console/logout` (CSRF-checked): the cookie is cleared.
pub async fn sign_out(
    State(console): State<Console>,
    operator: Operator,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let fields = Fields::parse(&body);
    operator.check_csrf(&console.keys, fields.csrf(&headers))?;
    let secure = console.settings.public_https || session::over_https(&headers);
    Ok(([(header::SET_COOKIE, session::clear_cookie(secure))], Redirect::to("/console/login")).into_response())
}
