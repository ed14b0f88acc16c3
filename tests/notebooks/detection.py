# detection: caffe.Detector over listed windows (what python/detect.py does
# with --crop_mode=list), with a random-weight CaffeNet and generated images.
import sys
import numpy as np
import pycaffe_lite as caffe

deploy, weights, mean_file, image = sys.argv[1:5]
caffe.set_mode_cpu()
mean = np.load(mean_file)
detector = caffe.Detector(deploy, weights, mean=mean.mean(1).mean(1), raw_scale=255, channel_swap=(2, 1, 0),
                          context_pad=16)
windows = [np.array([10, 20, 120, 150]), np.array([0, 0, 200, 240]), np.array([50, 60, 90, 100])]
detections = detector.detect_windows([(image, windows)])
print('detections', len(detections))
print('prediction', detections[0]['prediction'].shape, float(detections[0]['prediction'].sum()))
print('window', detections[1]['window'].tolist(), detections[1]['filename'] == image)
plain = caffe.Detector(deploy, weights, mean=mean.mean(1).mean(1), raw_scale=255, channel_swap=(2, 1, 0))
crop = plain.crop(caffe.io.load_image(image), windows[2])
print('plain crop', crop.shape)
padded = detector.crop(caffe.io.load_image(image), windows[0])
print('context crop', padded.shape)
