# The image of configs/rayservice.template.yaml: Ray 2.60 and the project on CUDA 12 (see the Makefile's
# install-gpu). The wheels bring their own CUDA 12 libraries; the node needs only an NVIDIA driver >= 570.
#   docker build -t registry.example.com/transcribe-serve:0.1.0 .
FROM rayproject/ray:2.60.0-py311-gpu
RUN sudo apt-get update && sudo apt-get install -y --no-install-recommends ffmpeg make g++ cmake \
    && sudo rm -rf /var/lib/apt/lists/*
COPY --chown=ray . /home/ray/transcribe-serve
# VENV is the image's own Python environment, the one `ray start` runs in.
RUN make -C /home/ray/transcribe-serve install-gpu VENV=/home/ray/anaconda3
