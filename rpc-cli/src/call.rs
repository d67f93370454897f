//! `rpc call`: one call, its arguments given as JSON and its reply printed as JSON.
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
    pub args: &'a str,
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

/// Makes the call and writes the reply to `out` as one line of JSON, or, for a method that
/// answers with a stream, each item as a line of its own as it arrives.
pub async fn run(
    client: &rpc::Client,
    request: Request<'_>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let signature = request.signature;
    if signature.kind.has_input_stream() {
        return Err(CliError::ClientStream(request.method.to_string()));
    }
    let method = method(request.method, signature)?;
    let args = RawArgs(encode_args(signature, request.args)?);
    let result = |reply: RawReply| -> Result<Value, CliError> {
        Ok(json::decode(
            &signature.result,
            &signature.registry,
            &reply.0,
        )?)
    };
    if signature.kind.has_output_stream() {
        let mut call = client
            .call_streaming_response::<RawArgs, RawReply>(method, args)
            .timeout(request.timeout);
        for (key, value) in request.metadata {
            call = call.metadata(key.clone(), value.clone().into_bytes());
        }
        let mut items = call.await?;
        while let Some(item) = items.next().await {
            writeln!(out, "{}", result(item?)?)?;
            out.flush()?;
        }
    } else {
        let mut call = client
            .call::<RawArgs, RawReply>(method, args)
            .timeout(request.timeout);
        for (key, value) in request.metadata {
            call = call.metadata(key.clone(), value.clone().into_bytes());
        }
        writeln!(out, "{}", result(call.await?)?)?;
    }
    Ok(())
}
