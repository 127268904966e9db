use eventcore::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
enum AccountEvent {
    #[event(name = "Deposited")]
    Credited { cents: u64 },
    Deposited { cents: u64 },
}

fn main() {}
