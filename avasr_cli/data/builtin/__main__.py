"""``python -m avasr_cli.data.builtin``: render one chunk of the built-in corpus in a fresh interpreter
(a task on stdin, its rows on stdout; see :func:`avasr_cli.data.builtin.worker_main`)."""

from avasr_cli.data.builtin import worker_main

worker_main()
