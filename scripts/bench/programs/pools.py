"""n no-op calls through a process pool of 2: pools.py N ppe|imap|map (workload 4)."""

import sys
from benchmod import noop
n, how = int(sys.argv[1]), sys.argv[2]
if how == "ppe":
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(2) as ex:
        for f in [ex.submit(noop) for _ in range(n)]:
            f.result()
else:
    import multiprocessing
    with multiprocessing.Pool(2) as pool:
        if how == "imap":
            for _ in pool.imap(noop, range(n)):
                pass
        else:
            pool.map(noop, range(n))
