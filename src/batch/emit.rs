//! `--emit slurm` and `--emit k8s`: the batch as an array job, one entry per
//! task, each task running `imgsan batch MANIFEST -o OUTDIR --index I`. The
//! scheduler does the scheduling; every task rewrites the summary when it ends,
//! so it is complete when the last one does.

use std::fmt::Write as _;
use std::path::Path;

use super::sizing::{Sizing, MEMORY_PER_JOB};
use super::Run;

/// Quotes `s` for a POSIX shell, in single quotes.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A complete sbatch script: an array of one task per entry, at most
/// `size.jobs` at once, each with `size.threads_per_job` CPUs and
/// [`MEMORY_PER_JOB`] of memory. `exe` is the imgsan binary (absolute). Task
/// logs go to OUTDIR/slurm-JOB_TASK.log.
pub fn slurm(run: &Run, exe: &Path, size: Sizing) -> String {
    let n = run.manifest.entries.len();
    let outdir = run.outdir.display().to_string();
    let mut s = String::new();
    let _ = writeln!(s, "#!/bin/bash");
    let _ = writeln!(
        s,
        "# imgsan batch as a Slurm job array: one task per image of"
    );
    let _ = writeln!(s, "#   {}", run.manifest.path.display());
    let _ = writeln!(
        s,
        "# Submit with `sbatch --wait THIS` to return when every task has ended, with the"
    );
    let _ = writeln!(
        s,
        "# highest exit code of the tasks; OUTDIR/summary.json is then complete."
    );
    let _ = writeln!(s, "#SBATCH --job-name=imgsan-batch");
    let _ = writeln!(s, "#SBATCH --array=0-{}%{}", n.saturating_sub(1), size.jobs);
    let _ = writeln!(s, "#SBATCH --ntasks=1");
    let _ = writeln!(s, "#SBATCH --cpus-per-task={}", size.threads_per_job);
    let _ = writeln!(s, "#SBATCH --mem={}M", MEMORY_PER_JOB >> 20);
    let _ = writeln!(s, "#SBATCH --output={outdir}/slurm-%A_%a.log");
    let _ = writeln!(s, "set -u");
    let _ = writeln!(
        s,
        "exec {} batch {} -o {} --index \"$SLURM_ARRAY_TASK_ID\" --threads \"${{SLURM_CPUS_PER_TASK:-{}}}\"",
        sh(&exe.display().to_string()),
        sh(&run.manifest.path.display().to_string()),
        sh(&outdir),
        size.threads_per_job
    );
    s
}

/// Parameters of the Kubernetes Job: the container image holding `imgsan`, and
/// the two persistent volume claims (the manifest's folder, mounted read-only
/// at /data, and OUTDIR, at /out).
#[derive(Debug, Clone)]
pub struct K8s {
    pub container: String,
    pub images_claim: String,
    pub output_claim: String,
}

/// YAML double-quoted scalar.
fn yq(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A minimal Indexed Job: `completions` = entries, `parallelism` = jobs, each
/// pod runs `imgsan batch /data/MANIFEST -o /out --index $(JOB_COMPLETION_INDEX)`.
/// Image paths in the manifest must stay inside its folder (the only one
/// mounted).
pub fn k8s(run: &Run, size: Sizing, p: &K8s) -> String {
    let n = run.manifest.entries.len();
    let file = run
        .manifest
        .path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "batch.yaml".into());
    let mem_mi = MEMORY_PER_JOB >> 20;
    let cpus = size.threads_per_job;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# imgsan batch as a Kubernetes Indexed Job: one pod per image of {}.",
        run.manifest.path.display()
    );
    let _ = writeln!(
        s,
        "# /data is the manifest's folder (claim {}), /out the output folder (claim {}).",
        p.images_claim, p.output_claim
    );
    let _ = write!(
        s,
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: imgsan-batch
spec:
  completionMode: Indexed
  completions: {n}
  parallelism: {jobs}
  backoffLimitPerIndex: 0
  maxFailedIndexes: {n}
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: imgsan
          image: {container}
          command: ["imgsan"]
          args: ["batch", {manifest}, "-o", "/out", "--index", "$(JOB_COMPLETION_INDEX)", "--threads", "{cpus}"]
          env:
            - name: JOB_COMPLETION_INDEX
              valueFrom:
                fieldRef:
                  fieldPath: metadata.annotations['batch.kubernetes.io/job-completion-index']
          resources:
            requests:
              cpu: "{cpus}"
              memory: {mem_mi}Mi
            limits:
              memory: {mem_mi}Mi
          volumeMounts:
            - name: images
              mountPath: /data
              readOnly: true
            - name: output
              mountPath: /out
      volumes:
        - name: images
          persistentVolumeClaim:
            claimName: {images}
            readOnly: true
        - name: output
          persistentVolumeClaim:
            claimName: {output}
"#,
        jobs = size.jobs,
        container = yq(&p.container),
        manifest = yq(&format!("/data/{file}")),
        images = yq(&p.images_claim),
        output = yq(&p.output_claim),
    );
    s
}

/// Entries whose image is outside the manifest's folder (not reachable in
/// the Job's /data mount).
pub fn outside_manifest_dir(run: &Run) -> Vec<String> {
    run.manifest
        .entries
        .iter()
        .filter(|e| {
            let p = Path::new(&e.image);
            p.is_absolute()
                || p.components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
        })
        .map(|e| e.name.clone())
        .collect()
}
