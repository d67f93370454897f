// The example from the documentation, implemented with plain `async fn` and
// called through the generated client.

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum MathError {
    DivisionByZero,
}

#[rpc::service]
pub trait Calculator {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    async fn ping(&self);
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            Err(MathError::DivisionByZero)
        } else {
            Ok(a / b)
        }
    }

    async fn ping(&self) {}
}

fn hostable<S: rpc::Service>(_: &S) {}

#[allow(dead_code)] // compiled, never run: it needs a server
async fn use_client() -> Result<(), rpc::Error> {
    let calc = CalculatorClient::connect("127.0.0.1:4000").await?;
    let sum: i64 = calc.add(2, 3).await?;
    let quotient: Result<i64, MathError> = calc.div(sum, 0).await?;
    let () = calc.ping().await?;
    let shared = CalculatorClient::new(calc.client().clone());
    drop((quotient, shared));
    Ok(())
}

fn main() {
    let server = Calc.into_service();
    hostable(&server);
    let _clone: ServeCalculator<Calc> = server.clone();
}
