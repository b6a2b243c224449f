//! The inspector's reads for the browser: the outbox, recent committed ops with origin and author, restores, rejected ops and the replica's size, as JSON.
