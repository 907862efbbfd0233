#!/bin/bash
# SLURM: one task per machine, each running `accelerate launch` with its machine rank; machine 0 (the
# first node of the allocation) is the main process. Submit with:  sbatch recipes/accelerate/slurm.sh
# (or, from a pip install:  sbatch "$(textdiff recipes path accelerate/slurm.sh)").
# The run folder must be on a filesystem every node sees. Resume after a preemption: add --resume
# (the checkpoint resumes on any number of nodes; the global batch is kept when batch_size * nodes is).
#SBATCH --job-name=textdiff
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one launcher per node; it starts one process per GPU
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

RECIPE=${RECIPE:-mdlm-owt-small}    # a shipped recipe name or a YAML file
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MAIN_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
PORT=${PORT:-29500}
CONFIG=$(textdiff recipes path accelerate/multi_node)

srun --kill-on-bad-exit=1 bash -c "accelerate launch --config_file $CONFIG \
    --num_machines $SLURM_NNODES --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
    --machine_rank \$SLURM_NODEID --main_process_ip $MAIN_IP --main_process_port $PORT \
    -m textdiff.cli train $RECIPE $*"
