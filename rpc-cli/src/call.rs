//! `rpc call`: one call, its arguments given as JSON and its reply printed as JSON. A
//! method that takes a stream from the client gets its items as JSON lines, one item per
//! line.
//!
//! The arguments are encoded through the method's reflected [`Signature`] (see
//! [`json`]), sent with the signature's fingerprint, so a server whose method has
//! changed since it was described refuses the call instead of misreading it, and the reply's
//! bytes are decoded the same way. The bytes travel through `rpc::Client` as [`RawArgs`] and
//! [`RawReply`].

use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use rpc::shape::{Shape, Signature};
use rpc::Method;
use serde_json::Value;

use crate::error::CliError;
use crate::json;
use crate::raw::{RawArgs, RawReply};

/// What to call, and how.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `Service.method`.
    pub method: &'a str,
    /// The method's signature, from reflection.
    pub signature: &'a Signature,
    /// The arguments as JSON: an array with one value per argument (`[]` or nothing for none).
    /// A client stream is not among them: it is `items`.
    pub args: &'a str,
    /// For a method that takes a stream from the client, its items as JSON lines: one item
    /// per line, blank lines skipped. `None` for other methods.
    pub items: Option<&'a str>,
    /// Metadata pairs sent with the call.
    pub metadata: &'a [(String, String)],
    /// The call's deadline, from when it starts; for a stream, until its end.
    pub timeout: Duration,
}

/// The `Method` for `Service.method` with `signature`'s fingerprint.
///
/// `Method` holds `'static` names, as generated code has them; the tool makes one method per
/// run, so the two names are leaked once.
pub fn method(name: &str, signature: &Signature) -> Result<Method, CliError> {
    let (service, method) = name
        .rsplit_once('.')
        .filter(|(s, m)| !s.is_empty() && !m.is_empty())
        .ok_or_else(|| CliError::MethodName(name.to_string()))?;
    let service: &'static str = Box::leak(service.to_owned().into_boxed_str());
    let method: &'static str = Box::leak(method.to_owned().into_boxed_str());
    Ok(Method::new(service, method).with_fingerprint(signature.fingerprint()))
}

/// The request body for `args`, which must fit the signature's arguments.
pub fn encode_args(signature: &Signature, args: &str) -> Result<Vec<u8>, CliError> {
    let value: Value = if args.trim().is_empty() {
        Value::Array(Vec::new())
    } else {
        serde_json::from_str(args)?
    };
    let tuple = Shape::Tuple(signature.args.iter().map(|a| a.shape.clone()).collect());
    Ok(json::encode(&tuple, &signature.registry, &value)?)
}

/// The encoded items of a client stream from `lines`: one JSON value per line (blank lines
/// skipped), each fitting the signature's input stream item. Errors name the line.
pub fn encode_items(signature: &Signature, lines: &str) -> Result<Vec<RawArgs>, CliError> {
    let Some(input) = &signature.input_stream else {
        return Ok(Vec::new());
    };
    lines
        .lines()
        .enumerate()
        .filter(|(_, text)| !text.trim().is_empty())
        .map(|(at, text)| {
            let line = at + 1;
            let value: Value =
                serde_json::from_str(text).map_err(|source| CliError::ItemJson { line, source })?;
            json::encode(&input.shape, &signature.registry, &value)
                .map(RawArgs)
                .map_err(|source| CliError::Item { line, source })
        })
        .collect()
}

/// Makes the call and writes the reply to `out` as one line of JSON, or, for a method that
/// answers with a stream, each item as a line of its own as it arrives. A client stream's
/// items are all encoded (and checked) before the call starts.
pub async fn run(
    client: &rpc::Client,
    request: Request<'_>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let signature = request.signature;
    let kind = signature.kind;
    if !kind.has_input_stream() && request.items.is_some() {
        return Err(CliError::NoInputStream(request.method.to_string()));
    }
    let method = method(request.method, signature)?;
    let args = RawArgs(encode_args(signature, request.args)?);
    let input = if kind.has_input_stream() {
        let items = encode_items(signature, request.items.unwrap_or_default())?;
        Some(rpc::Stream::iter(items))
    } else {
        None
    };
    let result = |reply: RawReply| -> Result<Value, CliError> {
        Ok(json::decode(
            &signature.result,
            &signature.registry,
            &reply.0,
        )?)
    };
    if kind.has_output_stream() {
        let call = match input {
            Some(input) => client.call_bidi::<RawArgs, RawArgs, RawReply>(method, args, input),
            None => client.call_streaming_response::<RawArgs, RawReply>(method, args),
        };
        let mut items = prepare(call, &request).await?;
        while let Some(item) = items.next().await {
            writeln!(out, "{}", result(item?)?)?;
            out.flush()?;
        }
    } else {
        let call = match input {
            Some(input) => {
                client.call_streaming_request::<RawArgs, RawArgs, RawReply>(method, args, input)
            }
            None => client.call::<RawArgs, RawReply>(method, args),
        };
        writeln!(out, "{}", result(prepare(call, &request).await?)?)?;
    }
    Ok(())
}

/// `call` with the request's timeout and metadata.
fn prepare<Out>(call: rpc::Call<RawArgs, Out>, request: &Request<'_>) -> rpc::Call<RawArgs, Out> {
    let mut call = call.timeout(request.timeout);
    for (key, value) in request.metadata {
        call = call.metadata(key.clone(), value.clone().into_bytes());
    }
    call
}
