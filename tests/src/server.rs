//! A sync server that can be killed like a crash (its runtime shut down:
//! every connection and transaction dropped mid-flight) and restarted on
//! the same address.

use std::net::SocketAddr;

use arbor_sync_server::Config;

/// A killable, restartable server.
pub struct KillableServer {
    /// Where it listens (stable across restarts).
    pub addr: SocketAddr,
    config: Config,
    runtime: Option<tokio::runtime::Runtime>,
}

impl KillableServer {
    /// Starts `config` on a free port of 127.0.0.1.
    pub fn start(config: Config) -> std::io::Result<KillableServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let mut s = KillableServer {
            addr,
            config,
            runtime: None,
        };
        s.serve(listener)?;
        Ok(s)
    }

    fn serve(&mut self, listener: std::net::TcpListener) -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        listener.set_nonblocking(true)?;
        let config = self.config.clone();
        runtime.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            if let Err(e) =
                arbor_sync_server::serve(listener, None, config, std::future::pending()).await
            {
                tracing::warn!(error = %e, "test server stopped");
            }
        });
        self.runtime = Some(runtime);
        Ok(())
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// True while it runs.
    pub fn is_up(&self) -> bool {
        self.runtime.is_some()
    }

    /// Kills it.
    pub fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Starts it again on the same address (after a kill).
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        // The killed runtime's threads close its listener on their own time
        // (`shutdown_background` does not wait): retry for a bounded while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let listener = loop {
            match std::net::TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        };
        self.serve(listener)
    }
}

impl Drop for KillableServer {
    fn drop(&mut self) {
        self.kill();
    }
}
