"""Figures 2 and 3 of the paper and a markdown table for runs made with train.py.

  python report.py --runs=/tmp/runs/spatial,/tmp/runs/winograd,/tmp/runs/winograd_relu \
      --out_dir=/tmp/runs/report
  python report.py --study=docs/results/study/study.json --out_dir=docs/results/study

With --runs, every results.json under the given directories is used. With --study, the JSON of
experiments/sparse_winograd_study.py (several seeds per point) gives mean ± std tables, the
claims of docs/results.md and four figures. See docs/training.md and docs/results.md.
"""

import os

from absl import app
from absl import flags

flags.DEFINE_list("runs", None, "Run directories (train.py --model_dir values) to collect.")
flags.DEFINE_string("study", None, "A study JSON (experiments/sparse_winograd_study.py).")
flags.DEFINE_string("out_dir", None, "Where the PNGs and report.md go (default: first run dir).")
flags.DEFINE_float("activation_density", None,
                   "Weight density whose runs Figure 3 shows (default: the lowest one).")
flags.DEFINE_string("title", "", "Title of Figure 2.")
flags.mark_flags_as_mutual_exclusive(["runs", "study"], required=True)
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.study:
        from tf_sparse_winograd.training import study_report
        out_dir = FLAGS.out_dir or os.path.join(os.path.dirname(FLAGS.study), "report")
        print(study_report.make_study_report(FLAGS.study, out_dir))
        print(f"Wrote {out_dir}/study_report.md and its figures")
        return
    from tf_sparse_winograd.training import reporting
    out_dir = FLAGS.out_dir or os.path.join(FLAGS.runs[0], "report")
    print(reporting.make_report(FLAGS.runs, out_dir, FLAGS.activation_density, FLAGS.title))
    print(f"Wrote {out_dir}/figure2_accuracy_vs_density.png, figure3_activation_density.png, "
          "report.md")


if __name__ == "__main__":
    app.run(main)
