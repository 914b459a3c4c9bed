//! Parse and lower a generated 10,000-line Dockerfile (issue target: under 20 ms).
#![allow(clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use kiln::dockerfile::{self, instruction};
use std::fmt::Write;

/// A Dockerfile that uses every instruction, several stages, continuations and heredocs,
/// `lines` physical lines long.
fn generate(lines: usize) -> String {
    let mut s = String::from("# syntax=docker/dockerfile:1\nARG BASE=busybox\n");
    let mut n = 2;
    let mut i = 0;
    while n < lines {
        let block = match i % 12 {
            0 => format!("FROM ${{BASE}} AS stage{i}\n"),
            1 => format!("ENV A{i}=\"value {i}\" B{i}=two\n"),
            2 => format!("RUN --mount=type=cache,target=/root/.cache echo {i} && \\\n    ls -la /tmp && \\\n    true\n"),
            3 => format!("COPY --chown=1000:1000 --chmod=644 src/{i}.txt /app/{i}.txt\n"),
            4 => format!("LABEL org.example.n{i}=\"{i}\" version=1.{i}\n"),
            5 => format!("RUN [\"/bin/sh\", \"-c\", \"echo {i}\"]\n"),
            6 => format!("WORKDIR /app/{i}\n"),
            7 => "COPY <<EOF /etc/motd\nhello\nworld\nEOF\n".to_string(),
            8 => format!("EXPOSE {}/tcp 53/udp\n", 8000 + i % 1000),
            9 => "HEALTHCHECK --interval=30s --timeout=3s CMD wget -q -O- localhost || exit 1\n"
                .to_string(),
            10 => format!("USER {}:{}\n", 1000 + i % 10, 100),
            _ => format!("CMD [\"/app/run\", \"--port\", \"{i}\"]\n"),
        };
        n += block.lines().count();
        s.push_str(&block);
        i += 1;
    }
    let _ = writeln!(s, "ENTRYPOINT [\"/bin/sh\"]");
    s
}

fn bench(c: &mut Criterion) {
    let text = generate(10_000);
    assert!(text.lines().count() >= 10_000);
    // Fail loudly rather than time an error path.
    let ast = dockerfile::parse(&text).expect("generated Dockerfile parses");
    instruction::lower(&ast).expect("generated Dockerfile lowers");
    c.bench_function("parse+lower 10k lines", |b| {
        b.iter(|| {
            let ast = dockerfile::parse(std::hint::black_box(&text)).expect("parses");
            instruction::lower(&ast).expect("lowers")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
