//! `ringway pub`: one message per stdin line.

use super::CmdError;
use ringway_core::{AppendOptions, Stream, StreamConfig};
use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;

pub fn run(
    root: &Path,
    name: &str,
    multi_writer: bool,
    type_id: u32,
    topic: Option<&str>,
) -> Result<ExitCode, CmdError> {
    let stream = Stream::open_or_create(
        root,
        name,
        &StreamConfig::default().multi_writer(multi_writer),
    )?;
    if multi_writer && !stream.config().multi_writer {
        return Err(format!(
            "stream '{name}' was created single-writer; concurrent publishers need a stream created with --multi-writer"
        )
        .into());
    }
    let mut writer = stream.writer()?;
    let meta = match topic {
        Some(t) => ringway_mqtt_gateway::MqttMeta::for_topic(t)
            .encode()
            .map_err(|e| format!("--topic '{t}': {e}"))?,
        None => Vec::new(),
    };
    let opts = AppendOptions {
        type_id,
        meta: &meta,
        ..Default::default()
    };
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = Vec::new();
    let mut last = None;
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("reading stdin: {e}"))?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        last = Some(writer.append_with(&opts, &line)?);
    }
    if let Some(p) = last {
        println!("{p}");
    }
    Ok(ExitCode::SUCCESS)
}
