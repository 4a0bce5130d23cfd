module keyscope.test/kafkagoold

go 1.21

require github.com/segmentio/kafka-go v0.3.0
