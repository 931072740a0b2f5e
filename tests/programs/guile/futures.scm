;;; Futures from (ice-9 futures): many make-future/touch pairs, nested
;;; futures, and futures that allocate while the main thread collects.
(use-modules (ice-9 futures))

(define (fib n) (if (< n 2) n (+ (fib (- n 1)) (fib (- n 2)))))

(define (allocate n)
  (let ((v (make-vector n)))
    (do ((i 0 (+ i 1))) ((= i n))
      (vector-set! v i (cons i (number->string i))))
    (let loop ((i 0) (sum 0))
      (if (= i n) sum (loop (+ i 1) (+ sum (car (vector-ref v i))
                                        (string-length (cdr (vector-ref v i)))))))))

(define futures (map (lambda (i) (make-future (lambda () (allocate (+ 1000 (* i 100))))))
                     (iota 64)))
(gc)
(format #t "allocating futures: ~a~%" (apply + (map touch futures)))

(format #t "fib futures: ~a~%"
        (map touch (map (lambda (n) (make-future (lambda () (fib n)))) (iota 20))))

(define (tree-sum depth)
  ;; Futures that make and touch futures of their own.
  (if (= depth 0)
      1
      (let ((left (make-future (lambda () (tree-sum (- depth 1)))))
            (right (make-future (lambda () (tree-sum (- depth 1))))))
        (+ (touch left) (touch right)))))
(format #t "nested futures: ~a~%" (tree-sum 8))

(define rounds
  (let loop ((round 0) (acc '()))
    (if (= round 200)
        (reverse acc)
        (loop (+ round 1) (cons (touch (future (length (make-list (+ round 1) round)))) acc)))))
(format #t "future rounds: ~a~%" (apply + rounds))
