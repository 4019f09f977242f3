//! [`Background`]: the runtime an emulator owns, so that it works under any executor and dropping it
//! ends every task before `drop` returns.

use std::future::Future;

use crate::error::EmulatorError;

/// Worker threads of the emulator's own runtime: enough for the gate to relay while a test's runtime is
/// busy, few enough for small CI machines.
const WORKER_THREADS: usize = 2;

/// The emulator's own runtime. Dropping it cancels and drops every task on it before returning.
pub(super) struct Background {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Background {
    pub(super) fn start() -> Result<Self, EmulatorError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("entra-emulator")
            .enable_all()
            .build()
            .map_err(|e| EmulatorError::io("starting the emulator's runtime", e))?;
        Ok(Background {
            runtime: Some(runtime),
        })
    }

    /// Runs `future` on the emulator's runtime and waits for it from the caller's executor.
    pub(super) async fn run<F>(&self, future: F) -> Result<F::Output, EmulatorError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let Some(runtime) = &self.runtime else {
            return Err(shut_down());
        };
        match runtime.spawn(future).await {
            Ok(output) => Ok(output),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(shut_down()),
        }
    }
}

fn shut_down() -> EmulatorError {
    EmulatorError::io(
        "running the emulator's start-up",
        std::io::Error::other("the emulator's runtime shut down"),
    )
}

impl Drop for Background {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        // Dropping a runtime blocks until its tasks are dropped, which tokio forbids on an async thread
        // (where emulators are usually dropped): do it on a thread of its own and wait for it.
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("entra-emulator-shutdown".into())
            .spawn(move || {
                if let Ok(runtime) = rx.recv() {
                    drop::<tokio::runtime::Runtime>(runtime);
                }
            });
        match spawned {
            Ok(thread) => {
                let _ = tx.send(runtime);
                let _ = thread.join();
            }
            // No thread to spare: stop without waiting rather than not at all.
            Err(_) => runtime.shutdown_background(),
        }
    }
}
