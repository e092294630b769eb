"""`kerasq demo` from Python: digits -> Caffe -> Keras -> quantize -> prune -> int8 TFLite.

The pipeline itself is kerasq.demo.run_demo (read it there); this script only runs it.
Run: python examples/demo.py [out_dir]
"""

import sys

from kerasq.demo import format_table, print_progress, run_demo

out_dir = sys.argv[1] if len(sys.argv) > 1 else None
print(format_table(run_demo(out_dir=out_dir, progress=print_progress())))
