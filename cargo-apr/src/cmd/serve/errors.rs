//! OpenAI-style errors: `{"error":{"message","type","param","code"}}` with
//! the HTTP status that goes with them. Every refusal of the server is one.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    /// 400: the request is wrong; `param` names the field when one is to blame.
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn unauthorized(message: &str) -> Self {
        ApiError::invalid(message, None).with_status(StatusCode::UNAUTHORIZED).with_code("invalid_api_key")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::invalid(message, None).with_status(StatusCode::NOT_FOUND).with_code("not_found")
    }

    /// 503: loading, shutting down, or the queue is full; the client may retry.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some("unavailable"),
        }
    }

    /// 500: the engine failed on a valid request.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    /// The JSON body alone (a streamed response sends it as an SSE event).
    pub fn to_json(&self) -> String {
        let body =
            Body { error: Detail { message: &self.message, kind: self.kind, param: self.param, code: self.code } };
        serde_json::to_string(&body).unwrap_or_else(|_| r#"{"error":{"message":"error"}}"#.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, [(header::CONTENT_TYPE, "application/json")], self.to_json()).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Loading and full queues clear up quickly: tell clients when to come back.
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
