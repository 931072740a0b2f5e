;;; par-map and par-for-each from (ice-9 threads) spread work over Guile's
;;; thread pool (which par-map segfaulted with an older shim).
(use-modules (ice-9 threads))

(define (checksum n)
  ;; Allocates 200 strings; a loop, not a non-tail map, because deep
  ;; recursion in several threads at once crashes Guile 3.0.8 by itself
  ;; (see threads.scm).
  (let loop ((i 0) (sum 0))
    (if (= i 200) sum (loop (+ i 1) (+ sum (string-length (number->string (* i n))))))))

(define (run round)
  (apply + (par-map checksum (iota 2000 round))))

(do ((round 0 (+ round 1))) ((= round 5))
  (format #t "par-map round ~a: ~a~%" round (run round)))

(define squares (par-map (lambda (x) (* x x)) (iota 10000)))
(format #t "sum of squares: ~a~%" (apply + squares))

(define total 0)
(define lock (make-mutex))
(par-for-each (lambda (x)
                (let ((v (make-vector 100 x)))
                  (with-mutex lock (set! total (+ total (vector-ref v 99))))))
              (iota 5000))
(format #t "par-for-each total: ~a~%" total)

(define nested (par-map (lambda (i) (apply + (par-map (lambda (j) (* i j)) (iota 50))))
                        (iota 50)))
(format #t "nested par-map: ~a~%" (apply + nested))
