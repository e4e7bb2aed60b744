"""Fake SLURM commands that run jobs on this machine, so that the real snakemake slurm executor plugin can
submit, poll and finish a DAG without a cluster (tests/workflow/test_cluster_profile.py), and so that tests can
see what real SLURM does to a job where users get hurt (tests/workflow/test_fake_slurm.py): time limits,
warning signals, the end of a step, preemption and requeueing.

Each command in fake_slurm/ (sbatch, sacct, squeue, scancel, scontrol, srun, sinfo, sacctmgr, and the test-only
fake-preempt and fake-timeout) runs `run_command.py NAME ARGS`, which calls commands.main. A job of N nodes gets
the nodes 127.0.0.[1-N]: distinct names that all are this machine (127/8 is loopback), so a main address picked
from the node list is reachable from every "node".

The modules, by concern:
  settings    slurm.conf / cgroup.conf knobs (FAKE_SLURM_* variables) and the state folder
  parsers     SLURM's parsers: options, #SBATCH lines, --time, --signal, node lists
  state       what slurmctld and the accounting know of a job (J.state ...), calls.log
  procs       the processes of a job as proctrack/cgroup finds them, wait statuses
  steps       srun and the steps' slurmstepd (tasks, KillOnBadExit, the end of a step)
  controller  a job's slurmctld and batch slurmstepd (time limit, --signal, requeue, preemption, KillWait)
  commands    sbatch, sacct, squeue, scancel, scontrol, sinfo, sacctmgr, fake-preempt, fake-timeout

State lives in $FAKE_SLURM_STATE: for job J, J.json (options, geometry, `pid`: the job's controller), J.sh (the
batch script), J.env.json (its environment), J.state (what slurmctld and the accounting know: squeue's and
sacct's state, restarts, requests), J.rc (the exit status of the batch script's last run, once the job is
done; a run that is requeued writes none), J.cancelled (after scancel), J.steps/ (the running steps' process
ids), J.controller.log (the controller's events, each with its time); every call and every signal the fake
delivers is appended to calls.log (`signal J SIGTERM steps`, `state J TIMEOUT`, ...).

Each job has a controller (`run_command.py _controller J`, its own session, a child subreaper so that nothing
the job starts escapes it) that plays slurmctld and slurmstepd: it runs the batch script (again after a
requeue), keeps the clock, and signals the job's processes as SLURM does with proctrack/cgroup:
  * a signal other than SIGKILL reaches only the "tasks": the batch shell for the batch step, the processes
    srun started for a step; their children get only the final SIGKILL (cgroup.conf SignalChildrenProcesses=no,
    the default). FAKE_SLURM_SIGNAL_CHILDREN=1 models SignalChildrenProcesses=yes: every process of the step;
  * SIGKILL reaches every process of the step: its tasks' process groups and sessions, and all their
    descendants (also one that called setsid; orphans are reparented to srun or the controller).
Time limit (sbatch -t, SLURM's formats, seconds rounded up to minutes): at the limit the job becomes TIMEOUT,
the steps' tasks get SIGTERM, then every task and the batch shell SIGCONT+SIGTERM, and KillWait later SIGKILL.
--signal=[{R|B}:]SIG[@TIME] (default TIME 60 s): SIGCONT+SIG to the steps' tasks (not the batch shell), or with
B: to the batch shell alone, TIME before the limit. `fake-timeout J` makes the limit come now (after the
warning's TIME, if the job has one), so that a test decides by an event when a job's time is up; the rest runs
the timer's own code. A step ends when its tasks have exited: whatever they left is SIGKILLed. `scontrol
requeue` and preemption end the run (as above) and run the batch script again under the same id with
SLURM_RESTART_COUNT+1; the output file is truncated again (--open-mode=append keeps it).

Environment (real seconds unless said otherwise):
  FAKE_SLURM_SECONDS_PER_MINUTE  length of one SLURM minute (default 60): -t and --signal's TIME are scaled
  FAKE_SLURM_KILL_WAIT           slurm.conf KillWait (default 30)
  FAKE_SLURM_REQUEUE_DEFAULT     slurm.conf JobRequeue (default 1): 0 = only --requeue jobs may be requeued
  FAKE_SLURM_REQUEUE_DELAY       how long a requeued job stays PENDING (default 1; SLURM's is ~121 s)
  FAKE_SLURM_SIGNAL_CHILDREN     cgroup.conf SignalChildrenProcesses (default 0)
  FAKE_SLURM_KILL_ON_BAD_EXIT    slurm.conf KillOnBadExit (default 1 here; SLURM's default is 0)
  FAKE_SLURM_GRACE_TIME          fake-preempt: the partition's GraceTime (default 5; SLURM's default is 0)
  FAKE_SLURM_PREEMPT_MODE        fake-preempt: PreemptMode, requeue (default) or cancel
  FAKE_SLURM_ACCOUNTS            what sacctmgr lists
  FAKE_SLURM_NODE_ENV            a JSON mapping the jobs' environment takes over what sbatch exported (the
                                 cluster tests point HF_ENDPOINT at a closed port: nodes without internet)
"""
