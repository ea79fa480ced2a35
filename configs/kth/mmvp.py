"""MMVP on KTH actions, 10 -> 20 frames of 128x128 (OpenSTL configs/kth/MMVP.py).

hid_S 16, hid_T 96, 2 RRDBs each in encoder, decoder and enhancer, down-sampling 2,2,2 (motion
matrices on 16x16 and 8x8 grids), direct matrix predictor; all 20 frames in one pass (OpenSTL's
aft_seq_length 20). Training as OpenSTL's MMVP method: the model is fed all T+T' frames
(model.train_feed 'openstl'; see tau_jax/models/mmvp), MSE of its T' outputs.
batch 16, 100 epochs, Adam + OneCycle; lr 1e-3.
"""

from tau_jax.config import base_config


def get_config():
    config = base_config("mmvp")
    config.model.update(in_shape=(10, 128, 128, 1), out_frames=20, hid_S=16, hid_T=96,
                        rrdb_encoder_num=2, rrdb_decoder_num=2, rrdb_enhance_num=2,
                        downsample_setting="2,2,2", use_direct_predictor=True)
    config.data.update(name="kth", batch_size=16, eval_batch_size=16, in_frames=10,
                       out_frames=20)
    config.optim.update(lr=1e-3, sched="onecycle")
    config.train.epochs = 100
    return config
