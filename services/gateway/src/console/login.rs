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

/// `GET /console/login`.
pub async fn form() -> Response {
    login_page(None).into_response()
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
    // Deny by default: the console shows every tenant, so a token scoped
    // to one tenant (a tenant claim, issue 29) does not sign in.
    let scoped =
        serde_json::to_value(&claims).ok().is_some_and(|c| c.get("landlord_tenant").is_some_and(|t| !t.is_null()));
    if scoped {
        let detail = "a tenant-scoped token cannot sign in to the console; it needs a token without a tenant claim";
        return (StatusCode::FORBIDDEN, login_page(Some(detail))).into_response();
    }
    let scopes: Vec<String> = claims.scope.split_whitespace().map(str::to_owned).collect();
    if !scopes.iter().any(|s| s == crate::auth::READ) {
        let detail = format!("the console needs the scope tenants:read; the token grants {:?}", claims.scope);
        return (StatusCode::FORBIDDEN, login_page(Some(&detail))).into_response();
    }
    let session = Session::new(&claims.sub, scopes, claims.exp);
    let secure = console.settings.public_https || session::over_https(&headers);
    let cookie = session::set_cookie(&console.keys.seal(&session), session.exp, secure);
    tracing::info!(subject = %claims.sub, "console sign-in");
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
